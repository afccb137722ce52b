"""Strategy `dim`: every head loses the same number of dims, so the student keeps all the teacher's
heads, each narrower (768 -> 192 with 12 heads: 12 heads of 16), in wid.attention_stages stages."""
from tencentpretrain.wid.strategies import MASK_STRATEGIES
from tencentpretrain.wid.strategies.base import MaskStrategy, mask_lowest


@MASK_STRATEGIES.register("dim")
class DimStrategy(MaskStrategy):
    def student_heads(self, hidden, heads, head_size, target, what="wid.target_hidden_size", where=None):
        self.require_multiple(target, heads, hidden, f"keeps all {heads} heads", what, where)
        return heads, target // heads

    def stages(self, heads, target_heads, wid):
        return wid.attention_stages

    def masked_units(self, group, fraction, geometry):  # dims per head
        return int(((geometry.head_size - geometry.target_head_size) * fraction) + 1e-9)

    def select(self, group, score, count):
        return mask_lowest(group, score, group.unit, count)
