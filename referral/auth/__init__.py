"""Who you are: passwords, tokens, sign-in, refresh, lock-out."""
