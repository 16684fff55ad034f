"""Release side of the update repository (keys, signing, publishing). Never frozen into the exe."""
