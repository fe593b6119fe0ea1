"""`parlai <script>` entry points of this package (registration.py lists this folder among
ParlAI's scripts): serve_transfertransfo, install_convai2, export_transfertransfo,
model_chat_results, acute_eval_results, convai2_official_eval. Thin: each parses options and calls an app.

An app: may import the other apps, the agent, weights, data and the recipe. Never the plugin.
"""
