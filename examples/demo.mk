# The detkit demo pipeline, one Makefile target per artifact.
#
#   make demo            (from the repository root: sets up .venv, then runs this file)
#   make -f examples/demo.mk DEMO=demo    (with `detkit` on PATH)
#
# As in real work, the detectors start from a pretrained model: examples/pretrained/
# ships one per demo width, trained on a larger synthetic *source* dataset (another
# seed, six shape classes) by `make -f examples/demo.mk pretrained` (see the end of this
# file and examples/pretrained/README.md). Their output convs (6 classes) are skipped
# when they load; body and neck are kept.
#
# Every target is a file, so a second run does nothing and touching an input re-runs
# only the stages downstream of it. Every command writes atomically: an interrupted
# run never leaves a file that make would take as fresh.

# this file, and the shipped pretrained models beside it (found from any working folder)
DEMO_MK := $(lastword $(MAKEFILE_LIST))
DETKIT ?= detkit
DEMO ?= demo
DATA := $(DEMO)/data
SIZE ?= 256
MODEL ?= yolov3-tiny
# teacher and student widths (channel multipliers)
WIDTH ?= 0.25
STUDENT_WIDTH ?= 0.125
IMAGES ?= 400
SEED ?= 0
BATCH ?= 16
LR ?= 2e-3
STAGE1_LR ?= 5e-3
BOTTLENECK_EPOCHS ?= 5
EPOCHS ?= 16
DISTILL_EPOCHS ?= 16
PRETRAINED ?= $(patsubst %/,%,$(dir $(DEMO_MK)))/pretrained
TEACHER_START := $(PRETRAINED)/$(MODEL)-w$(WIDTH).weights.h5
STUDENT_START := $(PRETRAINED)/$(MODEL)-w$(STUDENT_WIDTH).weights.h5
# options every model-running stage shares (training stages add --seed)
MODEL_ARGS = --model $(MODEL) --anchors $(DEMO)/anchors.txt --classes $(DATA)/classes.txt \
             --input-size $(SIZE)
COMMON = $(MODEL_ARGS) --seed $(SEED)

.PHONY: all
all: $(DEMO)/summary.txt

# 1. a synthetic dataset: images/, train.txt, val.txt, classes.txt, val.json
$(DATA)/train.txt:
	$(DETKIT) synth $(DATA) --images $(IMAGES) --size $(SIZE) --classes 4 --seed $(SEED) \
	    --val-fraction 0.2 --exist-ok

# 2. anchors fitted to the training boxes (6 anchors: two strides of yolov3-tiny)
$(DEMO)/anchors.txt: $(DATA)/train.txt
	$(DETKIT) kmeans-anchors $< --k 6 --input-size $(SIZE) --seed $(SEED) --out $@

# 3. training targets of every image (letterboxed, no augmentation)
$(DEMO)/labels.npz: $(DATA)/train.txt $(DEMO)/anchors.txt
	$(DETKIT) encode-labels $< --anchors $(DEMO)/anchors.txt --classes $(DATA)/classes.txt \
	    --input-size $(SIZE) --out $@

# 4. the pretrained body's (and neck's) features of every image, computed once
$(DEMO)/bottlenecks.h5: $(DATA)/train.txt $(DEMO)/anchors.txt $(TEACHER_START)
	$(DETKIT) cache-bottlenecks $< $(COMMON) --width $(WIDTH) --weights $(TEACHER_START) \
	    --out $@

# 5. stage 1: the new output convs on the cached features, the rest frozen. A training
# rule re-made (its inputs changed, or make deleted its target after an interruption)
# replaces its run: --exist-ok, as make replaces any other target.
$(DEMO)/stage1/best.weights.h5: $(DEMO)/bottlenecks.h5 $(DEMO)/labels.npz
	$(DETKIT) train $(DATA)/train.txt --stage 1 $(COMMON) --width $(WIDTH) \
	    --weights $(TEACHER_START) --bottlenecks $(DEMO)/bottlenecks.h5 \
	    --labels $(DEMO)/labels.npz --bottleneck-epochs $(BOTTLENECK_EPOCHS) --epochs 0 \
	    --batch-size $(BATCH) --lr $(STAGE1_LR) --val $(DATA)/val.txt --exist-ok --out $(DEMO)/stage1

# 6. stage 2: fine-tune everything at a lower learning rate
$(DEMO)/stage2/best.weights.h5: $(DEMO)/stage1/best.weights.h5
	$(DETKIT) train $(DATA)/train.txt --stage 2 $(COMMON) --width $(WIDTH) \
	    --weights $< --epochs $(EPOCHS) --batch-size $(BATCH) --lr $(LR) --val $(DATA)/val.txt \
	    --exist-ok --out $(DEMO)/stage2

# 7. a smaller student, from its own pretrained start, distilled from the stage-2 teacher
$(DEMO)/student/best.weights.h5: $(DEMO)/stage2/best.weights.h5 $(STUDENT_START)
	$(DETKIT) distill $(DATA)/train.txt --teacher $< --teacher-model $(MODEL) \
	    --teacher-width $(WIDTH) $(COMMON) --width $(STUDENT_WIDTH) --alpha 0.5 \
	    --weights $(STUDENT_START) --stage 1 --freeze none --epochs $(DISTILL_EPOCHS) \
	    --batch-size $(BATCH) --lr $(LR) --val $(DATA)/val.txt --exist-ok --out $(DEMO)/student

# 8. COCO mAP of teacher and student on the validation split
$(DEMO)/teacher_report.json: $(DEMO)/stage2/best.weights.h5
	$(DETKIT) eval-map $(DATA)/val.json $(MODEL_ARGS) --width $(WIDTH) --weights $< \
	    --metric coco --out $@

$(DEMO)/student_report.json: $(DEMO)/student/best.weights.h5
	$(DETKIT) eval-map $(DATA)/val.json $(MODEL_ARGS) --width $(STUDENT_WIDTH) --weights $< \
	    --metric coco --out $@

# 9. the comparison table
$(DEMO)/summary.txt: $(DEMO)/teacher_report.json $(DEMO)/student_report.json
	$(DETKIT) compare $^ --out $@

# ---------------------------------------------------------------------------------------
# The pretrained starting points (`make -f examples/demo.mk pretrained`): shipped in
# examples/pretrained/, so `make demo` never pays for them. A larger synthetic *source*
# dataset (another seed, all six shape classes, more images) trains the whole detector
# from scratch at each demo width; the demo loads it by layer name, keeping body and neck
# and skipping the class-dependent output convs, as keras-yolo3 users start from COCO.
# The shipped files have no prerequisites: a fresh clone never rebuilds them.
PRE_WORK ?= runs/pretrain
SOURCE := $(PRE_WORK)/source
SOURCE_IMAGES ?= 2000
SOURCE_CLASSES ?= 6
SOURCE_SEED ?= 1
PRE_EPOCHS ?= 30
PRE_LR ?= 1e-2
# XLA pays off over many epochs; tiny smoke runs set PRE_JIT= (compiling costs minutes)
PRE_JIT ?= --jit

.PHONY: pretrained
pretrained: $(PRETRAINED)/$(MODEL)-w$(WIDTH).weights.h5 \
            $(PRETRAINED)/$(MODEL)-w$(STUDENT_WIDTH).weights.h5

$(SOURCE)/train.txt:
	$(DETKIT) synth $(SOURCE) --images $(SOURCE_IMAGES) --size $(SIZE) \
	    --classes $(SOURCE_CLASSES) --seed $(SOURCE_SEED) --val-fraction 0.1 --exist-ok

$(PRE_WORK)/anchors.txt: $(SOURCE)/train.txt
	$(DETKIT) kmeans-anchors $< --k 6 --input-size $(SIZE) --seed $(SOURCE_SEED) --out $@

$(PRE_WORK)/w%/best.weights.h5: $(SOURCE)/train.txt $(PRE_WORK)/anchors.txt
	$(DETKIT) train $< --stage 1 --freeze none --model $(MODEL) --width $* \
	    --anchors $(PRE_WORK)/anchors.txt --classes $(SOURCE)/classes.txt --input-size $(SIZE) \
	    --seed $(SOURCE_SEED) --epochs $(PRE_EPOCHS) --batch-size $(BATCH) --lr $(PRE_LR) $(PRE_JIT) \
	    --val $(SOURCE)/val.txt --exist-ok --out $(PRE_WORK)/w$*

$(PRETRAINED)/$(MODEL)-w%.weights.h5:
	$(MAKE) -f $(DEMO_MK) $(PRE_WORK)/w$*/best.weights.h5
	mkdir -p $(PRETRAINED)
	cp $(PRE_WORK)/w$*/best.weights.h5.manifest.json $@.manifest.json.tmp
	cp $(PRE_WORK)/w$*/best.weights.h5 $@.tmp
	mv $@.manifest.json.tmp $@.manifest.json
	mv $@.tmp $@
