"""Media jobs: one module per job kind (pure core + task layer), and the job table."""
