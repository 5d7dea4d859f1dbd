"""HTTP layer: routes, dependencies, middleware and error handling."""
