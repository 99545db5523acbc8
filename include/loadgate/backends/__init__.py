"""Where a stage's shards run: local processes or Kubernetes pods, with one command line."""
