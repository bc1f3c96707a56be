"""The catalogue: products and their photos, search by photo, the import command and the admin."""
