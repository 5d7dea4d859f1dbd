"""HTTP behaviour through TestClient, with the lifespan running."""
