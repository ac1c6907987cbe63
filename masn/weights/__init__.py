"""Published weights: manifest, verified downloads, converters into our modules, safe loading."""
