"""Darknet import: cfg parsing (:mod:`.cfg`), the weights binary (:mod:`.weights`),
layout recognition (:mod:`.layout`) and array conversion (:mod:`.convert`); the
``import-darknet`` command (:mod:`detkit.commands.import_darknet`) chains them."""
