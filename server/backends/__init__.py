"""Model backends: the embedded llama-cpp-python model, remote endpoints, and a fake for unit tests."""
