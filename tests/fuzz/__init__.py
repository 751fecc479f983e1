"""Bad input on every decoder: property-based and fuzz tests that count what they tried."""
