__version__ = "0.1.0"  # crewq's own: the client speaks the API of the same release
