"""CIFAR-10: the archive, the tensors on the device, and the data config."""
