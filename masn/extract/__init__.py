"""Feature extraction: decoding, frame sampling, the detector, ResNet-152, I3D + RoIAlign, the
feature store and sharded, resumable extraction runs (see DESIGN.md, "Extraction contract")."""
