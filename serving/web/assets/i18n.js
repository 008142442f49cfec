// Interface text in Korean (default) and English. Only our own strings live here; model and user text
// never passes through a template, it is always set with textContent.

const STRINGS = {
  ko: {
    pageTitle: "Nexus-K 대화",
    skipToInput: "입력창으로 건너뛰기",
    brandTagline: "한국어 AI 비서",
    newChat: "새 대화",
    history: "대화 목록",
    historyEmpty: "저장된 대화가 없습니다.",
    untitled: "제목 없는 대화",
    menu: "대화 목록 열기",
    model: "모델",
    modelsLoading: "모델 불러오는 중…",
    modelsUnavailable: "모델을 불러올 수 없음",
    adapterSuffix: "(어댑터)",
    settings: "설정",
    langToggle: "English",
    langToggleLabel: "Switch to English",
    messagesLabel: "대화 내용",
    emptyTitle: "무엇을 도와드릴까요?",
    emptyBody: "질문을 입력하면 답변이 실시간으로 표시됩니다. 대화는 이 브라우저에만 저장됩니다.",
    emptyBodyStored: "질문을 입력하면 답변이 실시간으로 표시됩니다. 대화는 이 브라우저와 서버에 저장됩니다.",
    inputLabel: "메시지",
    inputPlaceholder: "메시지를 입력하세요 (Enter: 보내기, Shift+Enter: 줄바꿈)",
    send: "보내기",
    stop: "중지",
    disclaimer: "AI의 답변은 틀릴 수 있습니다. 중요한 내용은 반드시 확인하세요.",
    you: "나",
    assistant: "Nexus-K",
    aiGenerated: "AI 생성 답변",
    signedIn: "로그인한 사용자",
    copy: "복사",
    copied: "복사됨",
    copyFailed: "복사 실패",
    copyCode: "코드 복사",
    retry: "다시 시도",
    rename: "이름 바꾸기",
    renameLabel: "대화 이름",
    remove: "삭제",
    stopped: "사용자가 응답을 중지했습니다.",
    truncated: "최대 길이에 도달해 답변이 잘렸습니다.",
    usage: "입력 {prompt} · 출력 {completion} 토큰",
    generating: "답변 생성 중…",
    settingsTitle: "설정",
    systemPrompt: "시스템 프롬프트",
    systemPromptHelp: "모든 대화의 맨 앞에 보내는 지시문입니다. 비워 두면 보내지 않습니다.",
    temperature: "온도 (창의성)",
    temperatureHelp: "낮을수록 일관되고, 높을수록 다양한 답변을 합니다.",
    maxTokens: "최대 응답 토큰 수",
    maxTokensHelp: "비워 두면 서버 기본값을 사용합니다.",
    storeOnServer: "대화를 서버에 저장",
    storeOnServerHelp: "켜면 답변이 서버에 저장되고 다음 질문은 저장된 응답에 이어서 보냅니다. 대화를 삭제하면 서버에서도 지웁니다. 끄면 서버는 아무것도 보관하지 않습니다.",
    thinking: "생각 과정",
    thinkingLive: "생각하는 중…",
    apiKey: "API 키",
    apiKeyManage: "API 키 입력…",
    save: "저장",
    cancel: "취소",
    close: "닫기",
    keyTitle: "API 키가 필요합니다",
    keyBody: "이 서버는 API 키로 접근을 제한합니다. 관리자에게 받은 키를 입력하세요. 키는 이 브라우저에만 저장됩니다.",
    keyLabel: "API 키",
    keyForget: "저장된 키 지우기",
    keyRejected: "서버가 이 키를 거부했습니다. 키를 다시 확인해 주세요.",
    deleteTitle: "대화를 삭제할까요?",
    deleteBody: "「{title}」 대화가 이 브라우저에서 영구히 삭제됩니다.",
    reconnect: "다시 연결",
    errNetwork: "서버에 연결할 수 없습니다. 서버가 실행 중인지, 네트워크가 연결되어 있는지 확인해 주세요.",
    errAuth: "API 키가 없거나 올바르지 않습니다. API 키를 입력해 주세요.",
    errRate: "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
    errRateAfter: "요청이 너무 많습니다. {seconds}초 후에 다시 시도해 주세요.",
    errQuota: "사용 한도를 모두 사용했습니다. 관리자에게 한도 증액을 요청해 주세요.",
    errContext: "대화가 모델이 처리할 수 있는 길이를 넘었습니다. 새 대화를 시작하거나 메시지를 줄여 주세요.",
    errNotFound: "선택한 모델을 서버에서 찾을 수 없습니다. 다른 모델을 선택해 주세요.",
    errBadRequest: "요청이 올바르지 않습니다.",
    errServer: "서버에서 오류가 발생했습니다. 잠시 후 다시 시도해 주세요.",
    errInterrupted: "응답이 중간에 끊겼습니다. 다시 시도해 주세요.",
    errStorage: "브라우저 저장 공간이 부족해 대화를 저장하지 못했습니다.",
    errDetail: "서버 메시지: {detail}",
    errDeleteStored: "서버에 저장된 응답 일부를 삭제하지 못했습니다. 나중에 다시 시도해 주세요.",
  },
  en: {
    pageTitle: "Nexus-K Chat",
    skipToInput: "Skip to message input",
    brandTagline: "Korean AI assistant",
    newChat: "New chat",
    history: "Conversations",
    historyEmpty: "No saved conversations.",
    untitled: "Untitled chat",
    menu: "Open conversation list",
    model: "Model",
    modelsLoading: "Loading models…",
    modelsUnavailable: "Models unavailable",
    adapterSuffix: "(adapter)",
    settings: "Settings",
    langToggle: "한국어",
    langToggleLabel: "한국어로 보기",
    messagesLabel: "Conversation",
    emptyTitle: "How can I help?",
    emptyBody: "Ask a question and the answer streams in as it is written. Chats are stored in this browser only.",
    emptyBodyStored: "Ask a question and the answer streams in as it is written. Chats are stored in this browser and on the server.",
    inputLabel: "Message",
    inputPlaceholder: "Type a message (Enter: send, Shift+Enter: new line)",
    send: "Send",
    stop: "Stop",
    disclaimer: "AI answers can be wrong. Check anything important.",
    you: "You",
    assistant: "Nexus-K",
    aiGenerated: "AI-generated",
    signedIn: "Signed in",
    copy: "Copy",
    copied: "Copied",
    copyFailed: "Copy failed",
    copyCode: "Copy code",
    retry: "Retry",
    rename: "Rename",
    renameLabel: "Chat name",
    remove: "Delete",
    stopped: "You stopped this answer.",
    truncated: "The answer was cut off at the length limit.",
    usage: "{prompt} prompt · {completion} completion tokens",
    generating: "Writing an answer…",
    settingsTitle: "Settings",
    systemPrompt: "System prompt",
    systemPromptHelp: "Instructions sent at the start of every chat. Leave empty to send none.",
    temperature: "Temperature (creativity)",
    temperatureHelp: "Lower is more consistent, higher is more varied.",
    maxTokens: "Max answer tokens",
    maxTokensHelp: "Leave empty for the server's default.",
    storeOnServer: "Store chats on the server",
    storeOnServerHelp: "When on, answers are stored on the server and the next question continues from the stored response. Deleting a chat deletes them there too. When off, the server keeps nothing.",
    thinking: "Thinking",
    thinkingLive: "Thinking…",
    apiKey: "API key",
    apiKeyManage: "Enter API key…",
    save: "Save",
    cancel: "Cancel",
    close: "Close",
    keyTitle: "An API key is required",
    keyBody: "This server only answers requests with an API key. Enter the key your administrator gave you. It is stored in this browser only.",
    keyLabel: "API key",
    keyForget: "Forget saved key",
    keyRejected: "The server refused this key. Please check it.",
    deleteTitle: "Delete this chat?",
    deleteBody: "“{title}” will be removed from this browser for good.",
    reconnect: "Reconnect",
    errNetwork: "Cannot reach the server. Check that it is running and that you are online.",
    errAuth: "The API key is missing or invalid. Please enter your API key.",
    errRate: "Too many requests. Please try again shortly.",
    errRateAfter: "Too many requests. Please try again in {seconds} seconds.",
    errQuota: "Your usage quota is used up. Ask your administrator to raise it.",
    errContext: "The conversation is longer than the model can handle. Start a new chat or shorten your message.",
    errNotFound: "The selected model is not on the server. Please pick another model.",
    errBadRequest: "The request was not valid.",
    errServer: "The server had an error. Please try again shortly.",
    errInterrupted: "The answer was interrupted. Please try again.",
    errStorage: "Browser storage is full; the chat could not be saved.",
    errDetail: "Server says: {detail}",
    errDeleteStored: "Some answers stored on the server could not be deleted. Please try again later.",
  },
};

let current = "ko";

/** The active language code ("ko" or "en"). */
export function getLang() {
  return current;
}

/** Switch the interface language and retranslate every marked element under document. */
export function setLang(lang) {
  current = lang in STRINGS ? lang : "ko";
  document.documentElement.lang = current;
  document.title = t("pageTitle");
  applyTranslations(document);
}

/** Our string for key in the active language, with {name} placeholders filled from vars. */
export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS.ko[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

/**
 * Fill elements marked data-i18n (text) and data-i18n-<attr> (attributes such as aria-label,
 * placeholder, title) with the active language's strings.
 */
export function applyTranslations(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const attr of ["aria-label", "placeholder", "title"]) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      el.setAttribute(attr, t(el.getAttribute(`data-i18n-${attr}`)));
    }
  }
}
