from tencentpretrain.decoders.transformer_decoder import TransformerDecoder  # noqa: F401
