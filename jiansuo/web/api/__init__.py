"""The JSON API: search by photo, similar products, tokens, and its OpenAPI description."""
