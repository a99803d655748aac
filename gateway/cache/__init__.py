"""Response caching: an exact tier and a semantic tier, in process or shared through Redis."""
