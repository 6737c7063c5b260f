"""Storage: input readers, table schemas, and the run-folder Parquet store."""
