"""Operations: the command line, signals, launchers, console logs and Weights & Biases tracking."""
