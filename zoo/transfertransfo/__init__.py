"""TransferTransfo model zoo: `-mf zoo:transfertransfo/<entry>/model`.

Each entry module has `download(datapath)`, which builds
`{datapath}/models/transfertransfo/<entry>/model` the way ParlAI's zoo entries do.
"""
