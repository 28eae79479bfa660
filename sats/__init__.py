"""SATS: the SpacetimeDB algebraic type system, BSATN and SATS-JSON codecs, index keys."""
