"""Exporters: ONNX now; CoreML and TensorRT come with their issues. Heavy imports stay inside."""
