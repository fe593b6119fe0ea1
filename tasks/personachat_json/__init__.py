"""`-t personachat_json`: the recipe's personachat_self_original.json, served like `-t convai2`."""
