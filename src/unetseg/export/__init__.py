"""Sharing trained models: bioimage.io packages (export and import)."""
