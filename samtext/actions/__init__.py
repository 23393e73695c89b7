"""What a user calls: one module per action (the SDK's public functions are re-exported by ``samtext``)."""
