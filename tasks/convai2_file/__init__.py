"""`-t convai2_file`: any ConvAI2-format text file, with a deterministic train/valid split."""
