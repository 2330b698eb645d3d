"""Commands on the local image store (images, inspect, tag, rmi, pull, push, save, load,
merge): not implemented yet."""
