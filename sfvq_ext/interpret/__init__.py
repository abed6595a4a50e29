"""Reading a fitted curve as a map of a generator's latent space.

One package whose modules import in one direction. At the bottom, what the rest is
built from: editing directions and the curve's geometry (:mod:`.directions`), other
methods' directions for comparison (:mod:`.baselines`), pictures (:mod:`.pictures`)
and how much an edit changes an image (:mod:`.change`). Built on them: the layer
profile of a direction and its suggested W+ range (:mod:`.layer_profile`), the
bring-your-own probe table (:mod:`.probe`), the segment ranking (:mod:`.ranking`),
and the panoptic atlas: every factor a probe reads, along the curve (:mod:`.atlas`).
Everything public is importable from here.
"""

from .baselines import ganspace_directions, sefa_directions, style_weights
from .change import call_probe, image_change, probe_change, probe_names
from .directions import check_directions, directions, jump_segments, segment_lengths
from .pictures import augment_segment, edit_grid, image_grid, render_codebook, save_png, to_uint8
from .layer_profile import LayerProfile, layer_groups, layer_profile, layer_profiles, suggest_layers
from .probe import ProbeTable, probe_table
from .ranking import SegmentRank, rank_segments
from .atlas import FactorTracks, draw_atlas, factor_tracks, panoptic_score

__all__ = ["directions", "check_directions", "segment_lengths", "jump_segments", "ganspace_directions",
           "sefa_directions", "style_weights", "to_uint8", "image_grid", "save_png", "render_codebook", "edit_grid",
           "augment_segment", "image_change", "call_probe", "probe_names", "probe_change", "LayerProfile",
           "layer_profile", "layer_profiles", "layer_groups", "suggest_layers", "ProbeTable", "probe_table",
           "SegmentRank", "rank_segments", "FactorTracks", "factor_tracks", "panoptic_score", "draw_atlas"]
