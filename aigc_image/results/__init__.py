"""Result storage: where finished images go (local disk, an S3-compatible bucket, the user's own
bucket) and the URLs they are fetched by. Knows nothing of tasks."""
