"""Data: splits on disk shared by every modality, and the image and text modalities behind one interface."""
