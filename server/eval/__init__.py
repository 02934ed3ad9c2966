"""The offline evaluation harness: a client of the engine, like an editor, on real code nobody here wrote."""
