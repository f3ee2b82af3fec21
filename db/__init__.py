"""The pipeline's database: models, sessions, migrations and the functions that touch rows."""
