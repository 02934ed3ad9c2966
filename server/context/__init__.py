"""What the model is shown besides the text around the cursor: syntax context (scopes, imports, outline)."""
