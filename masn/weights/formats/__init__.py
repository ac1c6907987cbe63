"""Published weights formats: one module per publisher's family of files, each registering its
formats with ``@weights_format`` in :mod:`masn.weights.formats.registry`.

- ``bottom_up_attention``: the VG Faster R-CNN detector (``detectron2_pkl``, ``hf_frcnn``,
  ``milvlg_bua``);
- ``kinetics_i3d``: the I3D ResNet-50 (``caffe2_i3d``, ``pytorchvideo_i3d``);
- ``torchvision_resnet``: ResNet-152 (``torchvision_resnet``);
- ``openai_clip``: OpenAI's CLIP ViT-B/16 image tower (``openai_clip``);
- ``glove_files``: GloVe word vectors (``glove_text``, ``glove_zip``), validated only.

What the converters share: ``source_tensors`` (reading a file, accounting for every tensor;
pickles and TorchScript archives through :mod:`masn.unpickle`, which runs nothing they name)
and ``resnet_layout`` (the shapes of ResNet bottleneck stages).
"""
