"""From a video file to the networks' inputs. Import names from the module that defines them:

- ``sources``: the videos of a dataset (MSVD, MSRVTT, TGIF, any folder) keyed as its QA
  annotations name them (``list_videos``, ``VideoSource``).
- ``frames``: which frames make the 6-fps stream (``select_frames``, streaming
  ``FrameSelector``) and the clip around a sampled frame (``clip_positions``).
- ``decode``: decoding a file into its 6-fps stream of upright RGB frames (PyAV or decord;
  ``VideoStream``, ``decode_video``, ``DecodeError``).
- ``inputs``: one video's stream -> network inputs per sampled frame, in the decode workers
  (``video_inputs``, ``FrameInputs``, ``VideoDone``, ``VideoFailed``).
"""
