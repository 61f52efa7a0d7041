// CCDM keyframe timeline, ControlNet part of the keyframe cards: a preprocessor, a model ("— off —": no
// condition, `controlnet: null`), a weight (0..2) and a radius (frames), written into the keyframe's `controlnet`
// object; and "Send to ControlNet", which puts the keyframe image into ControlNet's txt2img unit 0. Shown only when
// the hidden #ccdm_controlnet_options box (filled by Python at page load) lists ControlNet models. The Timeline in
// ccdm_timeline.js mixes `parts.controlnet.methods` in at init.
(function () {
    'use strict';

    const parts = window.ccdmTimelineParts = window.ccdmTimelineParts || {};
    const OFF = ''; // the model select's value for "no condition"
    const DEFAULTS = {weight: 1, radius: 0};
    const NUMBERS = {
        weight: {min: 0, max: 2, step: '0.05', integer: false, title: 'ControlNet weight (0-2)'},
        radius: {min: 0, max: 1024, step: '1', integer: true,
            title: 'Radius in frames: the condition fades out over this many frames on each side (0: this frame only)'},
    };
    const SEND_TAB = 'txt2img';
    const SHOW_WAIT_MS = 3000;

    function dom() {
        return parts.dom;
    }

    // ---- options: {"modules": [...], "models": [...]} from Python -----------------------------------------------

    function names(value) {
        return Array.isArray(value) ? value.filter((x) => typeof x === 'string' && x.trim()) : [];
    }

    /** The options JSON as {modules, models}, or null when ControlNet (or any model of it) is absent. */
    function parseOptions(json) {
        let data;
        try {
            data = JSON.parse(json || '{}');
        } catch (err) {
            return null;
        }
        if (!data || typeof data !== 'object') return null;
        const models = names(data.models).filter((m) => m !== 'None'); // ControlNet lists "None" first
        if (!models.length) return null;
        return {modules: ['none'].concat(names(data.modules).filter((m) => m !== 'none')), models: models};
    }

    function specOf(kf) {
        const cn = kf.controlnet;
        return cn && typeof cn === 'object' && !Array.isArray(cn) ? cn : null;
    }

    function makeSpec(module, model, weight, radius) {
        return {module: module || 'none', model: model, weight: weight, radius: radius};
    }

    // ---- the card's ControlNet part ---------------------------------------------------------------------------

    function select(className, choices, value, title) {
        const node = dom().el('select', className);
        const listed = choices.map((c) => (Array.isArray(c) ? c : [c, c]));
        if (value !== undefined && !listed.some(([v]) => v === value)) listed.push([value, value + ' (not listed)']);
        for (const [optionValue, label] of listed) {
            const option = dom().el('option', '', label);
            option.value = optionValue;
            node.appendChild(option);
        }
        node.value = value;
        node.title = title;
        return node;
    }

    function numberInput(field, value) {
        const rule = NUMBERS[field];
        const input = dom().el('input', 'ccdm-cn-' + field);
        Object.assign(input, {type: 'number', min: String(rule.min), max: String(rule.max), step: rule.step});
        input.value = parts.text.formatNumber(value);
        input.title = rule.title;
        input.dataset.field = field;
        return input;
    }

    function storedNumber(spec, field) {
        return spec && typeof spec[field] === 'number' ? spec[field] : DEFAULTS[field];
    }

    function setOff(part, off) {
        part.classList.toggle('ccdm-cn-off', off);
        for (const node of part.querySelectorAll('.ccdm-cn-module, .ccdm-cn-weight, .ccdm-cn-radius')) {
            node.disabled = off;
        }
    }

    /** The ControlNet part of a keyframe card (options: parseOptions' result). */
    function cardPart(kf, options) {
        const {el, button} = dom();
        const spec = specOf(kf);
        const part = el('div', 'ccdm-cn');
        const send = button('ccdm-send-controlnet', '\u2197 Send', 'Send to ControlNet: this keyframe image goes into ' +
            'ControlNet unit 0 of txt2img, which is enabled');
        send.disabled = !kf.image;
        const head = el('div', 'ccdm-cn-head');
        head.append(el('span', 'ccdm-cn-title', 'ControlNet'), send);
        const numbers = el('div', 'ccdm-cn-numbers');
        numbers.append(numberInput('weight', storedNumber(spec, 'weight')),
            numberInput('radius', storedNumber(spec, 'radius')));
        part.append(head,
            select('ccdm-cn-module', options.modules, spec ? spec.module : 'none', 'ControlNet preprocessor'),
            select('ccdm-cn-model', [[OFF, '\u2014 off \u2014']].concat(options.models), spec ? spec.model : OFF,
                'ControlNet model (\u2014 off \u2014: no ControlNet condition at this keyframe)'),
            numbers);
        setOff(part, !spec);
        return part;
    }

    /** A weight or radius as typed, or null when it is not acceptable (then the reason is in the title). */
    function checkNumber(input) {
        const rule = NUMBERS[input.dataset.field];
        const value = Number(input.value);
        const valid = input.value.trim() !== '' && Number.isFinite(value) && value >= rule.min &&
            value <= rule.max && (!rule.integer || Number.isInteger(value));
        input.classList.toggle('ccdm-invalid', !valid);
        input.setAttribute('aria-invalid', valid ? 'false' : 'true');
        input.title = valid ? rule.title : input.dataset.field + ' must be ' +
            (rule.integer ? 'a whole number of frames' : 'a number') + ' in ' + rule.min + '..' + rule.max;
        return valid ? value : null;
    }

    // ---- "Send to ControlNet" ---------------------------------------------------------------------------------

    function dataUrlToFile(dataUrl, stem) {
        const m = /^data:(image\/[\w.+-]+);base64,(.*)$/s.exec(dataUrl || '');
        if (!m) throw new Error('the keyframe image is not a base64 data URL');
        const bytes = Uint8Array.from(atob(m[2]), (c) => c.charCodeAt(0));
        const ext = m[1] === 'image/jpeg' ? 'jpg' : m[1].split('/')[1].replace(/\W.*$/, '');
        return new File([bytes], stem + '.' + ext, {type: m[1]});
    }

    function switchTab(tab) {
        const switcher = window['switch_to_' + tab]; // the WebUI's ui.js defines switch_to_txt2img()
        if (typeof switcher === 'function') {
            switcher();
            return true;
        }
        return dom().switchToTab(tab);
    }

    function openAccordion(group) {
        // ControlNet 1.1.4xx: #txt2img_controlnet is a group around its accordion (or the accordion itself)
        const wrap = group.matches('.label-wrap') ? group : group.querySelector('.label-wrap');
        if (!wrap) return false;
        if (!wrap.classList.contains('open')) wrap.click();
        return true;
    }

    function showFirstUnit(tab) {
        // with several units ControlNet shows them as tabs (#txt2img_controlnet_tabs): unit 0 is the first
        const tabs = dom().byId(tab + '_controlnet_tabs');
        const first = tabs && tabs.querySelector('.tab-nav > button');
        if (first && !first.classList.contains('selected')) first.click();
    }

    function unitIds(tab) {
        // ControlNet names unit 0 "ControlNet-0" when it shows several units, "ControlNet" when it shows one
        for (const unit of ['ControlNet-0', 'ControlNet']) {
            const prefix = tab + '_controlnet_' + unit;
            if (dom().byId(prefix + '_input_image')) {
                return {image: prefix + '_input_image', enabled: prefix + '_controlnet_enable_checkbox'};
            }
        }
        return null;
    }

    function waitFor(test, ms) {
        return new Promise((resolve) => {
            const started = Date.now();
            const tick = () => {
                const found = test();
                if (found || Date.now() - started > ms) resolve(found || null);
                else setTimeout(tick, 50);
            };
            tick();
        });
    }

    /** Load the file into a gradio Image: its file input, else a drop on its upload area. */
    function putImage(component, file) {
        const transfer = new DataTransfer();
        transfer.items.add(file);
        const input = component.querySelector('input[type=file]');
        if (input) {
            input.files = transfer.files;
            input.dispatchEvent(new Event('change', {bubbles: true}));
            return;
        }
        const area = component.querySelector('[data-testid="image"] > div') || component;
        for (const type of ['dragenter', 'dragover', 'drop']) {
            area.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
        }
    }

    function enableUnit(elemId) {
        const box = dom().byId(elemId);
        const input = box && (box.matches('input[type=checkbox]') ? box : box.querySelector('input[type=checkbox]'));
        if (!input) return false;
        if (!input.checked) input.click();
        return true;
    }

    /** Put a keyframe image into ControlNet's unit 0 of `tab`; {ok, message} (a missing element is named). */
    async function sendImage(dataUrl, frame, tab) {
        const missing = [];
        const file = dataUrlToFile(dataUrl, 'ccdm-keyframe-' + frame);
        if (!switchTab(tab)) missing.push('the ' + tab + ' tab');
        const group = dom().byId(tab + '_controlnet');
        if (!group) return {ok: false, message: 'ControlNet not found: no #' + tab + '_controlnet in the page.'};
        if (!openAccordion(group)) missing.push('the ControlNet accordion');
        const ids = unitIds(tab);
        if (!ids) {
            const prefix = '#' + tab + '_controlnet_ControlNet';
            return {ok: false, message: 'ControlNet unit 0 not found: no ' + prefix + '-0_input_image or ' + prefix +
                '_input_image.'};
        }
        showFirstUnit(tab);
        const component = dom().byId(ids.image);
        putImage(component, file);
        const shown = await waitFor(() => component.querySelector('img'), SHOW_WAIT_MS);
        if (!shown) missing.push('the image in #' + ids.image + ' (it did not show)');
        if (!enableUnit(ids.enabled)) missing.push('the enable checkbox #' + ids.enabled);
        const sent = 'Keyframe ' + frame + ' sent to ControlNet unit 0 (' + tab + ')';
        if (!missing.length) return {ok: true, message: sent + ' and the unit enabled.'};
        return {ok: false, message: sent + '; not found: ' + missing.join(', ') + '.'};
    }

    // ---- Timeline methods (mixed in at init) ------------------------------------------------------------------

    const methods = {
        readControlNetOptions() {
            const holder = dom().byId(this.root.dataset.cnOptionsElem);
            const box = holder && holder.querySelector('textarea, input');
            const json = box ? box.value : '';
            if (json === this.cnJson) return false;
            this.cnJson = json;
            this.cnOptions = parseOptions(json);
            return true;
        },

        controlNetPart(kf) {
            return this.cnOptions ? cardPart(kf, this.cnOptions) : null;
        },

        onControlNetSelect(card, target) {
            const kf = this.find(Number(card.dataset.frame));
            const part = target.closest('.ccdm-cn');
            const model = part.querySelector('.ccdm-cn-model').value;
            if (model === OFF) {
                kf.controlnet = null;
            } else {
                const old = specOf(kf);
                const number = (field) => { // what is typed when acceptable, else what was stored
                    const value = checkNumber(part.querySelector('.ccdm-cn-' + field));
                    return value === null ? storedNumber(old, field) : value;
                };
                kf.controlnet = makeSpec(part.querySelector('.ccdm-cn-module').value, model, number('weight'),
                    number('radius'));
            }
            setOff(part, kf.controlnet === null);
            this.commit({render: false});
        },

        onControlNetNumber(card, input) {
            const value = checkNumber(input);
            const kf = this.find(Number(card.dataset.frame));
            const spec = specOf(kf);
            if (value === null || !spec) return; // marked and not applied (or no condition to apply it to)
            const next = Object.assign({}, spec, {[input.dataset.field]: value});
            const [weight, radius] = [storedNumber(next, 'weight'), storedNumber(next, 'radius')];
            kf.controlnet = makeSpec(next.module, next.model, weight, radius);
            this.commit({render: false});
        },

        resetControlNetNumber(card, input) {
            const spec = specOf(this.find(Number(card.dataset.frame)));
            input.value = parts.text.formatNumber(storedNumber(spec, input.dataset.field));
            checkNumber(input);
        },

        async sendToControlNet(frame) {
            const kf = this.find(frame);
            if (!kf || !kf.image) {
                return this.status('The keyframe at frame ' + frame + ' has no image to send to ControlNet.', true);
            }
            let result;
            try {
                result = await sendImage(kf.image, frame, SEND_TAB);
            } catch (err) {
                result = {ok: false, message: 'Send to ControlNet failed: ' + err.message};
            }
            this.status(result.message, !result.ok);
        },
    };

    parts.controlnet = {parseOptions: parseOptions, cardPart: cardPart, sendImage: sendImage, methods: methods};
})();
