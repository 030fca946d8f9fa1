"""The package version, in a module of its own: `nas` imports it, and so does
`nas.provenance`, without importing the package that lazily imports the rest."""

__version__ = "0.1.0"
