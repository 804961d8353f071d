"""Each private Keras API behind detkit.keras_compat still does what detkit relies on.

A failure here after a Keras upgrade names the Keras version and the compat function to
rewrite; the rest of detkit only calls those functions.
"""

import keras
import numpy as np

from detkit import keras_compat


def broken(what: str) -> str:
    return (f"Keras {keras_compat.keras_version()} changed {what}: rewrite it in "
            f"detkit/keras_compat.py")


def tiny_model(name: str = "tiny") -> keras.Model:
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden), name=name)


def test_ema_variable_pairs_are_the_optimizers_averages():
    model = tiny_model()
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5,
                                     ema_overwrite_frequency=None)
    model.compile(optimizer=optimizer, loss="mse")
    assert keras_compat.ema_variable_pairs(optimizer) is None, broken(
        "optimizer._model_variables_moving_average (present before the first step)")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)
    model.train_on_batch(x, y)
    pairs = keras_compat.ema_variable_pairs(optimizer)
    assert pairs is not None, broken("optimizer._model_variables_moving_average (ema_variable_pairs)")
    assert [id(v) for v, _ in pairs] == [id(v) for v in model.trainable_variables], broken(
        "optimizer._trainable_variables (ema_variable_pairs)")
    first = [np.array(v) for v, _ in pairs]
    model.train_on_batch(x, y)
    for (variable, average), old in zip(pairs, first):
        # The first step copies the weights; the next one averages with momentum 0.5.
        np.testing.assert_allclose(np.array(average), 0.5 * old + 0.5 * np.array(variable),
                                   rtol=1e-5, atol=1e-6,
                                   err_msg=broken("what _model_variables_moving_average holds"))


def test_declare_built_lets_a_wrapper_load_weights(tmp_path):
    class Wrapper(keras.Model):
        def __init__(self, network):
            super().__init__()
            self.network = network
            keras_compat.declare_built(self, network.built)

        def call(self, x):
            return self.network(x)

    source = Wrapper(tiny_model())
    assert source.built, broken("Layer.built (declare_built)")
    path = tmp_path / "w.weights.h5"
    source.save_weights(path)
    target = Wrapper(tiny_model())
    target.load_weights(path)
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b),
                                      err_msg=broken("Layer.built (declare_built)"))


def test_direct_sublayers_lists_one_level_in_order():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Dense(2, name="conv")
            self.norm = keras.layers.BatchNormalization(name="norm")

        def call(self, x):
            return self.norm(self.conv(x))

    block = Block(name="block")
    block(np.ones((1, 3), np.float32))
    names = [layer.name for layer in keras_compat.direct_sublayers(block)]
    assert names == ["conv", "norm"], broken(f"Layer._flatten_layers (direct_sublayers: {names})")
    model = tiny_model()
    assert [layer.name for layer in keras_compat.direct_sublayers(model)
            if not isinstance(layer, keras.layers.InputLayer)] == ["hidden", "out"], broken(
        "Layer._flatten_layers on a functional model (direct_sublayers)")


def test_symbolic_build_internals_exist():
    if keras.backend.backend() != "tensorflow":
        return
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    assert callable(getattr(tiny_model(), "_symbolic_build", None)), broken(
        "Model._symbolic_build (symbolic_build_without_data)")
    assert callable(getattr(TensorFlowTrainer, "_maybe_symbolic_build", None)), broken(
        "TensorFlowTrainer._maybe_symbolic_build (overridden by YoloTrainingModel)")
