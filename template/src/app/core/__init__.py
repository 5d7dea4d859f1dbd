"""Framework-independent building blocks: settings, logging, database, HTTP, concurrency."""
