"""Export: axolotl training configs and Hub dataset releases."""
