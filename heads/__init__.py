"""NanoDet and NanoDet-Plus rebuilt with the official state_dict names.

The bottom layer of nanodet-unitv2: architectures, checkpoint loading, the
native (NanoDet-exact) decode and the export wrappers.
"""
