"""Strategy `head`: whole heads are dropped, one more per stage, so the student keeps fewer heads of the
teacher's size (768 -> 192 with heads of 64: 3 heads); each layer keeps its own strongest heads."""
from tencentpretrain.wid.strategies import MASK_STRATEGIES
from tencentpretrain.wid.strategies.base import MaskStrategy, mask_lowest_chunks


@MASK_STRATEGIES.register("head")
class HeadStrategy(MaskStrategy):
    def student_heads(self, hidden, heads, head_size, target, what="wid.target_hidden_size", where=None):
        self.require_multiple(target, head_size, hidden, f"keeps whole heads of {head_size}", what, where)
        return target // head_size, head_size

    def stages(self, heads, target_heads, wid):
        return max(1, heads - target_heads)  # one head per stage

    def masked_units(self, group, fraction, geometry):  # whole heads
        return int(((geometry.heads - geometry.target_heads) * fraction) + 1e-9)

    def select(self, group, score, count):
        return mask_lowest_chunks(group, score, group.unit, count)
