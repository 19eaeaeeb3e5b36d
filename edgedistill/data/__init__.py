"""Data: splits on disk shared by every modality, and the modalities (image, text), each owning its
files, preprocessing, training batches and export, behind one interface (data.modality)."""
