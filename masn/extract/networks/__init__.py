"""The vision networks of extraction and where their weights come from.

- ``feature_networks``: the three networks run together on batches of sampled frames, loaded
  with the installed published weights or random ones (``load_networks``);
- ``detector`` (with ``proposals``: anchors, Caffe box arithmetic, the box choice): the VG
  Faster R-CNN; ``vocab`` (+ ``data/``): its object and attribute names;
- ``resnet``: ResNet-152 global appearance; ``i3d``: the I3D R50 motion features with RoIAlign;
- ``backbones``: the registry of the networks a setting chooses (the I3D), torch-free
  (:mod:`masn.registry` says how to add one).
"""
