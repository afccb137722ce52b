from tencentpretrain.encoders.transformer_encoder import TransformerEncoder  # noqa: F401
