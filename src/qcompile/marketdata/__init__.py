"""Market-data access: the TickDB REST client and the downloader into the local Parquet layout."""
