"""The vision networks of extraction, one per role, and where their weights come from.

- ``backbones``: the registry of the networks of each role (torch-free), which the settings'
  ``--detector``, ``--appearance`` and ``--motion`` choose from;
- ``feature_networks``: the three chosen networks run together on batches of sampled frames,
  with the installed published weights or random ones (``load_networks``);
- ``detector`` (with ``proposals`` and ``vocab``): the VG Faster R-CNN;
- ``resnet``: ResNet-152; ``clip``: CLIP ViT-B/16; ``i3d``: the I3D R50 networks;
- ``regions``: object features pooled from a network's grid at the detector's boxes.
"""
