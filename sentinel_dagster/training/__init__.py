"""Stage 4: the out-of-time split, XGBoost training, ONNX compilation, evaluation and
MLflow tracking."""
