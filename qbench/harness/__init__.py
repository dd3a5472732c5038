"""qbench's measuring side: provisions Redis, counts exactly, runs experiments, writes tidy rows."""
