"""My searches: each signed-in user's past query photos, their results one click away, kept for a while."""
