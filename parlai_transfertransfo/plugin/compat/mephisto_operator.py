"""Patches `mephisto.operations.operator`; the breakage is named in each docstring."""


def fix_operator_metrics_port(operator):
    """Every Mephisto Operator starts a Prometheus exporter on the fixed port 3031: the
    second run on a machine (other tests, another evaluation) cannot bind it and logs a
    traceback, and the exporter's thread holds the port for the life of the process.
    Nothing scrapes it unless Mephisto's Prometheus/Grafana metrics are installed
    (`mephisto metrics install`); start it only then."""
    start_metrics_server = operator.start_metrics_server

    def start_metrics_server_if_used(args=None):
        from mephisto.utils.metrics import metrics_are_installed

        if metrics_are_installed():
            start_metrics_server(args)

    operator.start_metrics_server = start_metrics_server_if_used
