"""What runs: release records, jobspec rendering, rollouts, one-off runs and logs."""
