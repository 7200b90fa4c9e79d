"""ReID models: backbones split into stem + trunk, AGW head, dual-stream VI routing, checkpoints.

Modules: `config` (ModelConfig), `backbones` (BACKBONES registry), `agw` (non-local, GeM, BNNeck),
`dual_stream` (per-modality stems), `reid` (ReIDModel, build_model), `pretrained` (load_pretrained),
`checkpoint` (save_checkpoint, load_checkpoint). Import-free so the CLI starts without torch.
"""
