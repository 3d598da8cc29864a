"""One module (or package) per service, and the catalogue that lists them."""
