from tencentpretrain.models.model import Model  # noqa: F401
